# pgqueue: the library, both services and the migrations, installed from the built wheel (the
# wheel carries the migrations and SQL, so nothing runs from a checkout).
FROM python:3.11-slim AS build
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps -w /dist .

FROM python:3.11-slim
COPY --from=build /dist /dist
RUN pip install --no-cache-dir "$(ls /dist/pgqueue-*.whl)[services]" && rm -rf /dist

# Inside a container the servers must listen beyond loopback.
ENV PGQUEUE_HOST=0.0.0.0
EXPOSE 8888 8001 8002
CMD ["pgqueue", "serve"]
