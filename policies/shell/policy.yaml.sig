{
  "format": "agentwall-policy-signature/v1",
  "statement": {
    "agentwall_version": "0.1.0",
    "algorithm": "ed25519",
    "demo": true,
    "format": "agentwall-policy-signature/v1",
    "key_id": "sha256:cea3403d949f03185216616e0a8de0a301cbfdd04d2c6f4fe1305a1eef365b13",
    "policy_sha256": "92dbef433f2f1e4208c61af051f34e26a9c89ede3e9fb1448d7fc36eabfc4e87",
    "signed_at": "2026-11-21T11:23:37Z"
  },
  "payload": "eyJhZ2VudHdhbGxfdmVyc2lvbiI6IjAuMS4wIiwiYWxnb3JpdGhtIjoiZWQyNTUxOSIsImRlbW8iOnRydWUsImZvcm1hdCI6ImFnZW50d2FsbC1wb2xpY3ktc2lnbmF0dXJlL3YxIiwia2V5X2lkIjoic2hhMjU2OmNlYTM0MDNkOTQ5ZjAzMTg1MjE2NjE2ZTBhOGRlMGEzMDFjYmZkZDA0ZDJjNmY0ZmUxMzA1YTFlZWYzNjViMTMiLCJwb2xpY3lfc2hhMjU2IjoiOTJkYmVmNDMzZjJmMWU0MjA4YzYxYWYwNTFmMzRlMjZhOWM4OWVkZTNlOWZiMTQ0OGQ3ZmMzNmVhYmZjNGU4NyIsInNpZ25lZF9hdCI6IjIwMjYtMTEtMjFUMTE6MjM6MzdaIn0=",
  "signature": "/yBl/09VwxbDVTT7EYiPBfSPkaqsuWjPz6kLSnTIi8UKsFZDyGAwaUff5TFe89Jds0uRBJo6yYxG/n86lr1RDQ==",
  "public_key": "LrSm2CWATrmiY4JLyGPb4MfyRic1jgDl6EIEXC+TkG0="
}
