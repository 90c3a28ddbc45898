"""The media repository: files under data_dir, thumbnails, the media endpoints."""
