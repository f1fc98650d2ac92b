"""Plain data: resources, job states decided from evidence, the job record and the job.json schema."""
