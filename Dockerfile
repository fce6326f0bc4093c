# One image for both halves of the driver: `--mode controller` (Deployment) and `--mode node`
# (DaemonSet); see deploy/. Build:
#   docker build --build-arg REVISION=$(git rev-parse HEAD) -t <registry>/iscsi-csi:<package.json version> .
#
# The base: Node.js 24, the Active LTS line (end of life 2028-04-30), on Debian 13 (trixie, stable),
# pinned by the digest of its multi-arch index with the tag beside it, so a rebuild gets the same base
# until the pin is moved on purpose. To move it to the latest build of the tag:
#   docker buildx imagetools inspect node:24-trixie-slim --format '{{json .Manifest.Digest}}'
ARG NODE_IMAGE=node:24-trixie-slim@sha256:8ec5d7557396cfe32d21c3f9c13072355ceab22b584578ca4bb28af31120cffe

# ---- build: compile the TypeScript sources to dist/ ------------------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
COPY scripts/bundle.mjs ./scripts/
RUN npx tsc -p tsconfig.json && node scripts/bundle.mjs

# ---- runtime ---------------------------------------------------------------------------------------
FROM ${NODE_IMAGE}
ARG NODE_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="iscsi-csi" \
      org.opencontainers.image.description="Kubernetes CSI driver for iSCSI block volumes (controller and node plugin)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${NODE_IMAGE}"
# The filesystem tools the node plugin runs inside the container (deploy/config-node.yaml gives them
# `prefix: []`): blkid, blockdev, fsck (util-linux), mount, umount (mount), mkfs.ext4/ext3, resize2fs
# (e2fsprogs), mkfs.xfs, xfs_growfs (xfsprogs), mkfs.btrfs, btrfs (btrfs-progs); nsenter (util-linux)
# reaches the host's tools. No open-iscsi on purpose: only one iscsid may run per node (its netlink
# socket is not namespaced), and an iscsiadm from the image would not match the host's iscsid and node
# database, so iscsiadm, multipath and multipathd are always the host's, run through commandPrefix.
# Unpinned on purpose: trixie's stable versions, with its security updates at every rebuild.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      util-linux mount e2fsprogs xfsprogs btrfs-progs coreutils findutils \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY proto ./proto
COPY --from=build /src/dist ./dist
# Runs as root: the node plugin mounts filesystems into kubelet's directories, formats and resizes
# block devices, writes /sys (SCSI scan and delete) and enters the host's namespaces with nsenter; none
# of that is possible for a non-root user. The manifests make the pods privileged for the same reason.
ENTRYPOINT ["node", "/app/dist/bundle/cli.js"]
