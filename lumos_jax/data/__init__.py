"""Token records, official-record import and the input pipeline."""
