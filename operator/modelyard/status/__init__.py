"""Pure status logic: condition bookkeeping, what children's state means, reasons as constants."""
