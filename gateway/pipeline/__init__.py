"""The ingest pipeline (README "Architecture"); `pipeline.py` joins the stages."""

from gateway.pipeline.batches import Message
from gateway.pipeline.pipeline import COMMIT_BACKOFF, MAX_BATCH, MAX_REAPPLY, Pipeline

__all__ = ["COMMIT_BACKOFF", "MAX_BATCH", "MAX_REAPPLY", "Message", "Pipeline"]
