"""The user's documents: collections, uploads, ingestion (extract, split, embed) and retrieval."""
