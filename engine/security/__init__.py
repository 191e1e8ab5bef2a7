"""Personal and card data: card-number recognition, masking, tokens and encryption, the hash-chained audit
log and its trail of decisions, the output guard of bulk commands, and erasure."""
