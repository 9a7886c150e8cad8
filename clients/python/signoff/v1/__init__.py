"""Generated protobuf and gRPC code for the signoff.v1 API (made by `make gen`)."""
