{
  "format": "agentwall-policy-signature/v1",
  "statement": {
    "agentwall_version": "0.1.0",
    "algorithm": "ed25519",
    "demo": true,
    "format": "agentwall-policy-signature/v1",
    "key_id": "sha256:796c3adfe90c9ccf26477919be221c088951caac29b39f5bb852ad7c9d448a16",
    "policy_sha256": "3be2d3cb7f7ec68455ec02341ed4e88023181161acb85b63a3b2b2bcd7ba2a72",
    "signed_at": "2026-11-21T11:23:37Z"
  },
  "payload": "eyJhZ2VudHdhbGxfdmVyc2lvbiI6IjAuMS4wIiwiYWxnb3JpdGhtIjoiZWQyNTUxOSIsImRlbW8iOnRydWUsImZvcm1hdCI6ImFnZW50d2FsbC1wb2xpY3ktc2lnbmF0dXJlL3YxIiwia2V5X2lkIjoic2hhMjU2Ojc5NmMzYWRmZTkwYzljY2YyNjQ3NzkxOWJlMjIxYzA4ODk1MWNhYWMyOWIzOWY1YmI4NTJhZDdjOWQ0NDhhMTYiLCJwb2xpY3lfc2hhMjU2IjoiM2JlMmQzY2I3ZjdlYzY4NDU1ZWMwMjM0MWVkNGU4ODAyMzE4MTE2MWFjYjg1YjYzYTNiMmIyYmNkN2JhMmE3MiIsInNpZ25lZF9hdCI6IjIwMjYtMTEtMjFUMTE6MjM6MzdaIn0=",
  "signature": "ErSbNsQVIEC67Hl1QyXqlrN5vb1yR1ISnN/RpU+eMdDjyl8sSja3lpPrF4sOtjhkcs6DvAtoEb1zY5osqlCbBQ==",
  "public_key": "ykoCjIkLs5QPu4HIGyLBgLVHpCaFKImtSJGmLDLHc7c="
}
