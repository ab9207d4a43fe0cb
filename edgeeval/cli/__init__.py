"""The command line: parser, subcommands, the one error boundary, console output."""
