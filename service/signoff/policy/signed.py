"""Old home of signed bundles, kept so existing imports work; new code imports `signoff.bundles`."""

from signoff.bundles.keys import (
    PRIVATE_KEY_NAME,
    PUBLIC_KEY_NAME,
    generate_keys,
    key_fingerprint,
    load_private_key,
    load_public_key,
)
from signoff.bundles.manifest import (
    DEFAULT_LIMITS,
    EXPIRY_WARNING_SECONDS,
    FORMAT,
    MAX_CLOCK_SKEW_SECONDS,
    Limits,
    Manifest,
    iso_utc,
)
from signoff.bundles.signing import SOURCE_DATE_EPOCH, parse_expires_in, sign_bundle, signing_time
from signoff.bundles.source import SignedBundleSource
from signoff.bundles.verify import load_signed_bundle, open_signed_bundle

__all__ = [
    "DEFAULT_LIMITS",
    "EXPIRY_WARNING_SECONDS",
    "FORMAT",
    "MAX_CLOCK_SKEW_SECONDS",
    "PRIVATE_KEY_NAME",
    "PUBLIC_KEY_NAME",
    "SOURCE_DATE_EPOCH",
    "Limits",
    "Manifest",
    "SignedBundleSource",
    "generate_keys",
    "iso_utc",
    "key_fingerprint",
    "load_private_key",
    "load_public_key",
    "load_signed_bundle",
    "open_signed_bundle",
    "parse_expires_in",
    "sign_bundle",
    "signing_time",
]
