"""The 9-DOF transform of multiscale registration (tomoflow.register.transform)."""

import numpy as np
import pytest

from tomoflow.register.transform import (
    Affine9,
    compose,
    rotation_from_rotvec,
    rotation_vector,
    torch_matrix,
    voxel_to_physical,
)


def test_rotation_vector_round_trip_and_orthogonality():
    v = np.array([0.3, -0.2, 0.5])
    r = rotation_from_rotvec(v)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    np.testing.assert_allclose(rotation_vector(r), v, atol=1e-12)
    np.testing.assert_allclose(rotation_from_rotvec(np.zeros(3)), np.eye(3))


def test_affine9_is_rs_about_the_centre_and_decomposes():
    a = Affine9((0.01, -0.02, 0.03), (1.01, 0.99, 1.02), (3.0, 4.0, -5.0), (80.0, 70.0, 60.0))
    m = a.matrix
    # the fixed point moves by the translation only; the linear part is R S (scale first)
    np.testing.assert_allclose(m @ np.r_[a.center, 1.0], np.r_[np.add(a.center, a.translation), 1.0])
    np.testing.assert_allclose(m[:3, :3], rotation_from_rotvec(a.rotation) @ np.diag(a.scale), atol=1e-15)
    b = Affine9.from_matrix(m, a.center)
    np.testing.assert_allclose(b.matrix, m, atol=1e-12)
    np.testing.assert_allclose(b.scale, a.scale, atol=1e-12)
    assert b.rotation_deg == pytest.approx(np.degrees(np.linalg.norm(a.rotation)))
    assert a.as_dict()["matrix"] == m.tolist()


def test_torch_matrix_matches_numpy_and_has_gradients_at_identity():
    torch = pytest.importorskip("torch")
    a = Affine9((0.01, -0.02, 0.03), (1.01, 0.99, 1.02), (3.0, 4.0, -5.0), (80.0, 70.0, 60.0))
    p = torch.tensor([*a.rotation, *a.scale, *a.translation], dtype=torch.float64)
    np.testing.assert_allclose(
        torch_matrix(p, torch.tensor(a.center, dtype=torch.float64)).numpy(), a.matrix[:3], atol=1e-12
    )
    p0 = torch.tensor([0, 0, 0, 1, 1, 1, 0, 0, 0], dtype=torch.float64, requires_grad=True)
    m = torch_matrix(p0, torch.zeros(3, dtype=torch.float64))
    m[1, 0].backward()  # d(R[y, z]) / d(rotation about x) = 1 at the identity
    assert torch.isfinite(p0.grad).all() and p0.grad[2] == pytest.approx(1.0)


def test_voxel_to_physical_and_compose():
    v2p = voxel_to_physical((2.0, 1.0, 0.5))
    np.testing.assert_allclose(v2p @ [1, 2, 4, 1], [2, 2, 2, 1])
    t = np.eye(4)
    t[:3, 3] = 1.0
    np.testing.assert_allclose(compose(t, v2p) @ [1, 2, 4, 1], [3, 3, 3, 1])
