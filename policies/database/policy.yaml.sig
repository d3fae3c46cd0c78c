{
  "format": "agentwall-policy-signature/v1",
  "statement": {
    "agentwall_version": "0.1.0",
    "algorithm": "ed25519",
    "demo": true,
    "format": "agentwall-policy-signature/v1",
    "key_id": "sha256:1b4053286299a820992946d31eb643d34cd6b747b30bdeb2756a3b91f01c7eed",
    "policy_sha256": "b9b33540989ea4f063480a01fca7b2ae552765431569f2d51861e0835adb07a6",
    "signed_at": "2026-11-21T11:23:35Z"
  },
  "payload": "eyJhZ2VudHdhbGxfdmVyc2lvbiI6IjAuMS4wIiwiYWxnb3JpdGhtIjoiZWQyNTUxOSIsImRlbW8iOnRydWUsImZvcm1hdCI6ImFnZW50d2FsbC1wb2xpY3ktc2lnbmF0dXJlL3YxIiwia2V5X2lkIjoic2hhMjU2OjFiNDA1MzI4NjI5OWE4MjA5OTI5NDZkMzFlYjY0M2QzNGNkNmI3NDdiMzBiZGViMjc1NmEzYjkxZjAxYzdlZWQiLCJwb2xpY3lfc2hhMjU2IjoiYjliMzM1NDA5ODllYTRmMDYzNDgwYTAxZmNhN2IyYWU1NTI3NjU0MzE1NjlmMmQ1MTg2MWUwODM1YWRiMDdhNiIsInNpZ25lZF9hdCI6IjIwMjYtMTEtMjFUMTE6MjM6MzVaIn0=",
  "signature": "qfUt0KTMoxeLobADeTWpCUHrg8Qgr1W5sUpyuQ52bPEOpw0Hmk9HMam5k+uxksmS/Y7AMJ/XNsdHff8cwZqeAw==",
  "public_key": "mjmhZT/Yqk2lzaUsdmer3NYHT/OHtXau2C/ixI4i5Z4="
}
