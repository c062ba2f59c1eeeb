"""Click commands, one module per `servecat` subcommand."""
