"""``agentwall keygen --out KEYBASE``: a new Ed25519 key pair for signing policies."""

from __future__ import annotations

import argparse

from agentwall.promote import keyfiles, signing

HELP = "Create an Ed25519 key pair for signing policies (KEYBASE.key 0600, KEYBASE.pub)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", required=True, metavar="KEYBASE", help="writes KEYBASE.key and KEYBASE.pub"
    )


def run(args: argparse.Namespace) -> int:
    private_key = signing.generate_private_key()
    key_path, pub_path = keyfiles.write_keypair(args.out, private_key)
    print(f"private key: {key_path} (mode 0600; keep it secret, never commit it)")
    print(f"public key:  {pub_path} (give this to the proxy: --trusted-key {pub_path})")
    print(f"key id:      {signing.key_id(private_key.public_key())}")
    return 0
