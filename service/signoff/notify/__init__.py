"""Posting approval requests from the signoff event stream to Slack and Microsoft Teams."""
