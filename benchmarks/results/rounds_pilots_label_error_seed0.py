import json, sys, numpy as np
sys.path.insert(0, "/work/main/benchmarks")
import rounds_synthetic as rs
pseudo = sys.argv[1]; truth = "/tmp/p6/out40/data-s0/unlabeled600/annotations.json"
gt = json.loads(open(truth).read()); names = {im["id"]: im["file_name"] for im in gt["images"]}
true = {}
for a in gt["annotations"]: true.setdefault(names[a["image_id"]], []).append(a)
coco = json.loads(open(pseudo).read()); pn = {im["id"]: im["file_name"] for im in coco["images"]}
d, rel, sizes = [], [], []
for a in coco["annotations"]:
    t = max(true.get(pn[a["image_id"]], []), key=lambda c: rs._iou(c["bbox"], a["bbox"]), default=None)
    if t is None or rs._iou(t["bbox"], a["bbox"]) < 0.7: continue
    p, g = np.asarray(a["keypoints"]).reshape(-1, 3), np.asarray(t["keypoints"]).reshape(-1, 3)
    k = (p[:, 2] > 0) & (g[:, 2] > 0)
    s = np.sqrt(max(t.get("area") or t["bbox"][2]*t["bbox"][3], 1))
    for j in np.where(k)[0]:
        d.append(p[j, :2] - g[j, :2]); rel.append((p[j, :2] - g[j, :2]) / s); sizes.append(j)
d, rel, sizes = np.array(d), np.array(rel), np.array(sizes)
print("n", len(d), "mean err px", d.mean(0), "median", np.median(d, 0), "mean |err|", np.abs(d).mean(0))
print("rel mean", rel.mean(0), "rel rms", np.sqrt((rel**2).mean(0)))
for j in range(17):
    m = sizes == j
    if m.sum(): print(j, m.sum(), np.round(d[m].mean(0), 2), np.round(np.abs(d[m]).mean(0), 2))
