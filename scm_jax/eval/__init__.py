"""Evaluation: feature extractors (`extractor.get_extractor`: the FID Inception or the shipped MNIST-5k
classifier), metrics on their outputs (`metrics`: Fréchet distance, Inception Score, precision/recall, reference
statistics files) and the offline MNIST-5k metric (`embedded_metric.evaluate_samples`)."""
