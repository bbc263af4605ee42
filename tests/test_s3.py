"""S3 storage against a real S3 server (moto's, see :mod:`.s3fixtures`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from athens_trio.storage import compliance

from .s3fixtures import S3Server, s3_bucket, s3_server

__all__ = ["s3_bucket", "s3_server"]  # the fixtures, used by name


@pytest.mark.parametrize("check", compliance.CHECKS.values(), ids=list(compliance.CHECKS))
async def test_compliance(
    check: compliance.Check, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    await check(lambda: s3_server.storage(s3_bucket), tmp_path)
