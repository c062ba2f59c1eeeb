"""The `servecat` command line: the top floor. It may import every layer; nothing imports it."""
