"""The FUSE mount: the views over the index, and the pyfuse3 adapter that serves them."""
