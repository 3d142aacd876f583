# syntax=docker/dockerfile:1
# Build stage: compile the Cython data plane into a wheel.
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Runtime stage: the wheel and its dependencies, no compiler, a non-root user.
FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home fastmesh
USER fastmesh
EXPOSE 10000 9901
ENTRYPOINT ["fastmesh"]
CMD ["run"]
