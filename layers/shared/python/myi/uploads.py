"""Where a user's uploaded exports live in the import bucket: ``uploads/<user id>/<import id>/...``."""

from __future__ import annotations

from typing import Any

from myi import aws
from myi.settings import Settings

UPLOAD_PREFIX = "uploads/"


def user_prefix(user_id: int) -> str:
    return f"{UPLOAD_PREFIX}{user_id}/"


class UploadsNotDeleted(RuntimeError):
    pass


def delete_user_uploads(settings: Settings, user_id: int, *, client: Any = None) -> int:
    """Delete every object under the user's prefix; returns how many were deleted."""
    s3 = client or aws.client("s3", settings)
    deleted = 0
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=settings.import_bucket, Prefix=user_prefix(user_id)):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            result = s3.delete_objects(Bucket=settings.import_bucket, Delete={"Objects": keys, "Quiet": True})
            if result.get("Errors"):
                raise UploadsNotDeleted(f"{len(result['Errors'])} uploads of user {user_id} were not deleted")
            deleted += len(keys)
    return deleted
