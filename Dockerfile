# The operator image: slim Python, the package installed from this checkout, a non-root user.
# Build: make docker-build (IMAGE=modelyard:dev). The chart runs it with a read-only root
# filesystem; Python then simply does not write bytecode caches.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin modelyard
COPY --from=build /install /usr/local
USER 10001:10001
EXPOSE 8000 8080
ENTRYPOINT ["modelyard"]
CMD ["run"]
