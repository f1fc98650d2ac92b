"""The flow of a cell: capture, package, submit, watch, pull; arrays, cleaning and the registry."""
