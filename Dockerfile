# reconciler's own image: the daemon (`reconciler run`) and the CLI. Non-root, no shell needed
# at run time except for the sharded StatefulSet's one-line entry (which /bin/sh provides).
# Every Python package comes from the lock files (requirements/), checked against its hash.
FROM python:3.11-slim AS build
WORKDIR /src
COPY requirements ./requirements
RUN pip install --no-cache-dir --require-hashes -r requirements/build.txt
COPY pyproject.toml README.md ./
COPY reconciler ./reconciler
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin reconciler
COPY requirements/runtime.txt /tmp/runtime.txt
COPY --from=build /wheels /wheels
# Bytecode compiled at build time: the root filesystem is read-only at run time, and a CLI run
# that compiled its sources would start about 0.1 s later.
RUN pip install --no-cache-dir --require-hashes -r /tmp/runtime.txt \
    && pip install --no-cache-dir --no-deps /wheels/*.whl && rm -rf /wheels /tmp/runtime.txt
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RECONCILER_STATE_DIR=/var/cache/reconciler \
    RECONCILER_LISTEN=0.0.0.0:8080
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["reconciler"]
CMD ["run"]
