{
  "format": "agentwall-policy-signature/v1",
  "statement": {
    "agentwall_version": "0.1.0",
    "algorithm": "ed25519",
    "demo": true,
    "format": "agentwall-policy-signature/v1",
    "key_id": "sha256:6443edaa1bddb3fdfd3fbfd072da9ecdb74747cb7f4757575069310f636556b6",
    "policy_sha256": "c0c096ea5ef8ab48a6b2a34d37286876a447d5136e1b99710353440f32b1c7c9",
    "signed_at": "2026-11-21T11:23:36Z"
  },
  "payload": "eyJhZ2VudHdhbGxfdmVyc2lvbiI6IjAuMS4wIiwiYWxnb3JpdGhtIjoiZWQyNTUxOSIsImRlbW8iOnRydWUsImZvcm1hdCI6ImFnZW50d2FsbC1wb2xpY3ktc2lnbmF0dXJlL3YxIiwia2V5X2lkIjoic2hhMjU2OjY0NDNlZGFhMWJkZGIzZmRmZDNmYmZkMDcyZGE5ZWNkYjc0NzQ3Y2I3ZjQ3NTc1NzUwNjkzMTBmNjM2NTU2YjYiLCJwb2xpY3lfc2hhMjU2IjoiYzBjMDk2ZWE1ZWY4YWI0OGE2YjJhMzRkMzcyODY4NzZhNDQ3ZDUxMzZlMWI5OTcxMDM1MzQ0MGYzMmIxYzdjOSIsInNpZ25lZF9hdCI6IjIwMjYtMTEtMjFUMTE6MjM6MzZaIn0=",
  "signature": "UaW7+/6VTsYTB7UQ69307+3prvyeYgYw55D4Y5S5jK1RyLMnztXlpYwcc/lrgxJMnwcFdsu21YMC7Wv1EAQBAw==",
  "public_key": "g5KAEo0i3JViLQsc9lHa8MfsmMf2d74SZS3Npw1r6Nw="
}
