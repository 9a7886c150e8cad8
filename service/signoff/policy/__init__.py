"""Policy bundles: YAML files parsed, validated and compiled into an evaluable form."""
