# syncd's image: build a venv with syncd in it, then copy only that venv into a slim
# runtime that runs as a non-root user with its store on a volume.
# The install step is the one CI runs (`pip install .`, without the dev extra).

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY syncd ./syncd
RUN python -m venv /opt/syncd \
    && /opt/syncd/bin/python -m pip install --no-cache-dir --upgrade pip \
    && /opt/syncd/bin/python -m pip install --no-cache-dir .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/syncd --shell /usr/sbin/nologin syncd \
    && install -d -o syncd -g syncd -m 0700 /var/lib/syncd \
    && install -d -m 0755 /etc/syncd
COPY --from=build /opt/syncd /opt/syncd
COPY rules /etc/syncd/rules
COPY deploy/syncd.toml /etc/syncd/syncd.toml
ENV PATH=/opt/syncd/bin:$PATH PYTHONUNBUFFERED=1
USER syncd
VOLUME /var/lib/syncd
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["syncd", "health", "--config", "/etc/syncd/syncd.toml"]
STOPSIGNAL SIGTERM
CMD ["syncd", "run", "--config", "/etc/syncd/syncd.toml"]
