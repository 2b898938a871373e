"""BM13xx ASIC chains (BM1366/BM1368/BM1370): UART frames, registers, jobs and nonces."""
