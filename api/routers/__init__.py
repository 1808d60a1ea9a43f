"""One ``APIRouter`` per resource: analytics, images, and uploads with processed images."""
