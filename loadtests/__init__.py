"""The embedded stack and the proofs: Locust scenarios, prover, privacy scan, report."""
