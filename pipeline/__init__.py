"""Fashion-MNIST pipeline: four stages (ingest, preprocess, train, evaluate) run by DVC or Prefect."""
