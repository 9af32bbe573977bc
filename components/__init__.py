"""A scikit-learn model from data to a live KServe endpoint with Kubeflow Pipelines."""
