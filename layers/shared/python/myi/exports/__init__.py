"""History exports: the listener's plays as a zip (Spotify's extended streaming history, or CSV),
written by a worker into the file bucket as a multipart upload, and handed out as a presigned GET.

- :mod:`myi.exports.jobs`: the export rows (create, list, read), the presigned download, deletion.
- :mod:`myi.exports.formats`: how a play is written in each format, and how files are split.
- :mod:`myi.exports.writer`: a zip streamed into an S3 multipart upload in constant memory, whose
  state survives a continuation.
- :mod:`myi.exports.worker`: the SQS message handler with continuations and failure handling.
"""
