"""One module per `azrdp` command. Each parses options, calls one library function, renders."""
