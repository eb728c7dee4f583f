"""Encoders per modality; any callable or torch module can plug in. See `encoders.resolve`."""
from .encoders import Encoder, PixelPCA, SentenceTransformerEncoder, TableStandardizer, TfidfSVD, resolve

__all__ = ["Encoder", "PixelPCA", "SentenceTransformerEncoder", "TableStandardizer", "TfidfSVD", "resolve"]
