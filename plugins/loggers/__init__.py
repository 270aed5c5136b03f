"""First-party loggers: TensorBoard and MLflow."""
