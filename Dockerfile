# pgqueue: the library, both services and the migrations in one image.
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY pgqueue ./pgqueue
COPY service_publish ./service_publish
COPY service_subscribe ./service_subscribe
COPY db ./db
RUN pip install --no-cache-dir -e ".[services]"

# Inside a container the servers must listen beyond loopback, so they refuse to start without
# PGQUEUE_API_TOKENS (docker-compose reads them from .env; see .env.example).
ENV PGQUEUE_HOST=0.0.0.0
EXPOSE 8888 8001 8002
CMD ["pgqueue", "serve"]
