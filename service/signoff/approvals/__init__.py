"""Human sign-off: approval records in Redis, bound to the exact action they were asked for."""
