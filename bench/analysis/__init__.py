"""Numbers computed from stored results: class-group metrics, paired statistics, and Section 3's theory model."""
