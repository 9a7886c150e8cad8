"""The gRPC edge: protobuf in and out, everything else delegated to the engine."""
