"""Signed policy bundles: Ed25519-signed tarballs, verified whole before anything is used."""
