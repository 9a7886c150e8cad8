"""The HTTP face of signoff: AuthZEN, approvals over JSON, Slack and Teams, the web inbox."""
