"""One module per faultline subcommand; harness.cli registers them."""
