"""The TCP (L4) data plane: one weighted pick per downstream connection, then a byte relay."""
