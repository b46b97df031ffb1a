"""History imports: the export formats, the streaming reader, the import jobs and the worker."""
