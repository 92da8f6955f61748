"""Pure recovery rules: no I/O, no framework. Everything here is plain data in, plain data out."""
