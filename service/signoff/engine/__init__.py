"""The decision engine: compiled policies evaluated against one request at a time."""
