# docker build -t rtsp-backend .   &&   docker run -p 8000:8000 -v rtsp-data:/data rtsp-backend
# The wheel is built and installed into a venv in a build stage; the image runs it as a
# non-root user, with the database in the /data volume. FFmpeg comes with the
# imageio-ffmpeg wheel, so the image needs no system FFmpeg.
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY app ./app
COPY supervisors ./supervisors
RUN python -m venv /venv \
 && /venv/bin/pip install --no-cache-dir --disable-pip-version-check -c constraints.txt .

FROM python:3.11.11-slim-bookworm
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin rtsp \
 && mkdir -p /data && chown rtsp:rtsp /data
COPY --from=build /venv /venv
ENV PATH=/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    DATABASE_URL=sqlite:////data/streams.db
USER rtsp
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/api/health/', timeout=4).status != 200)"]
# SIGTERM reaches the server itself (exec form, no shell): viewers get `stopped` and
# 1001, FFmpeg is reaped, and it exits within 5 s
STOPSIGNAL SIGTERM
ENTRYPOINT ["rtsp-viewer", "serve"]
