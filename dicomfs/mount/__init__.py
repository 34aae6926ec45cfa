"""The FUSE mount: the views over the index, served to the kernel by a session of our own."""
