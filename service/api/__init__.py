"""HTTP controllers: parse, authorise, call the pipeline, shape the response."""
