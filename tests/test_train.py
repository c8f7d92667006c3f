"""Training (issue #3): each loss term on a hand-computable case; steps lower the loss; resume."""
import torch

from rtgaze_fast import RTGaze
from rtgaze_fast.scenes import head_scene
from rtgaze_fast.camera import frontal_camera
from rtgaze_fast.train import PerceptualLoss, RTGazeLoss, Trainer, TriplaneTeacher, depth_loss, reconstruction_loss


def test_reconstruction_loss_by_hand():
    pred, target = torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    pred[0, :, 0, 0] = 1.0                      # one pixel off by 1 in every channel
    assert torch.isclose(reconstruction_loss(pred, target), torch.tensor(0.25))
    mask = torch.zeros(1, 1, 2, 2)
    mask[0, 0, 0, 0] = 1.0                      # the eye mask covers exactly that pixel
    assert torch.isclose(reconstruction_loss(pred, target, mask, eye_weight=2.0), torch.tensor(0.25 + 2.0))


def test_depth_loss_by_hand():
    d, t = torch.tensor([[[[2.0, 3.0]]]]), torch.tensor([[[[2.5, 3.0]]]])
    assert torch.isclose(depth_loss(d, t), torch.tensor(0.25))
    assert torch.isclose(depth_loss(d, t, torch.tensor([[[[1.0, 0.0]]]])), torch.tensor(0.5))


def test_perceptual_loss_zero_on_equal_and_positive_otherwise():
    lp = PerceptualLoss()
    x = torch.rand(1, 3, 32, 32)
    assert float(lp(x, x)) == 0.0
    assert float(lp(x, torch.rand(1, 3, 32, 32))) > 0


def test_total_weights_the_terms():
    out = {"image": torch.ones(1, 3, 4, 4), "depth": torch.full((1, 1, 2, 2), 3.0)}
    loss = RTGazeLoss(alpha=2.0, beta=3.0, gamma=0.0)
    total, terms = loss(out, torch.zeros(1, 3, 4, 4), teacher_depth=torch.full((1, 1, 2, 2), 2.0))
    assert abs(float(total) - (2.0 * 1.0 + 3.0 * 1.0)) < 1e-6 and terms["L_D"] == 1.0


def test_triplane_teacher_renders_depth():
    planes, dec = head_scene(64)
    depth = TriplaneTeacher(planes, dec)(frontal_camera(2), 8)
    assert depth.shape == (2, 1, 8, 8) and torch.isfinite(depth).all()
    assert 2.2 < float(depth[0, 0, 4, 4]) < 2.6  # the head's front surface


def fixed_batch():
    g = torch.Generator().manual_seed(0)
    return {"image": torch.rand(2, 3, 128, 128, generator=g) * 2 - 1,
            "target": torch.rand(2, 3, 64, 64, generator=g) * 2 - 1,
            "gaze_target": torch.rand(2, 2, generator=g) - 0.5,
            "eye_mask": (torch.rand(2, 1, 64, 64, generator=g) > 0.8).float(),
            "teacher_depth": torch.full((2, 1, 32, 32), 2.6)}


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    trainer = Trainer(RTGaze("tiny", deterministic=True), lr=1e-3, device="cpu")
    batch = fixed_batch()
    first = trainer.train_step(batch)["total"]
    for _ in range(5):
        last = trainer.train_step(batch)["total"]
    assert last < first


def test_checkpoint_and_resume(tmp_path):
    torch.manual_seed(0)
    a = Trainer(RTGaze("tiny", deterministic=True), lr=1e-3, device="cpu")
    batch = fixed_batch()
    a.train_step(batch)
    path = str(tmp_path / "ckpt.safetensors")
    a.save(path)
    b = Trainer(RTGaze("tiny", deterministic=True), lr=1e-3, device="cpu")
    b.resume(path)
    assert b.step == 1
    ta, tb = a.train_step(batch), b.train_step(batch)
    assert ta["total"] == tb["total"]
    for (k, v), (_, w) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(v, w), k
