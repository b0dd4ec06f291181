#!/usr/bin/env python3
"""Recompute the strongSwan 6.1 hybrid X25519 + ML-KEM-768 / PSK test vector.

Reads strongswan-6.1-hybrid-x25519-mlkem768-psk.json (next to this file, or
the path given as argv[1]) and checks, with the Python standard library only
(AES-GCM is implemented below, it is only used to decrypt the captured
messages):

  * SPIs, nonces and KE payload data against the raw IKE_SA_INIT messages
  * SKEYSEED(0) = prf(Ni | Nr, g^ir) and SK_* (0) = prf+(SKEYSEED, Ni|Nr|SPIi|SPIr)
  * decryption of both IKE_INTERMEDIATE messages with SK_e (0) and the
    ML-KEM encapsulation key / ciphertext carried in them
  * IntAuth_A|P rebuilt from the raw messages, IntAuth_i/IntAuth_r
  * SKEYSEED(1) = prf(SK_d(0), ss | Ni | Nr) and SK_* (1)
  * decryption of both IKE_AUTH messages with SK_e (1), the IDi/IDr/AUTH
    payloads and the first CHILD_SA's SPIs in them
  * MACedIDs, signed octets (RealMessage | Nonce | MACedID | IntAuth) and
    AUTH = prf(prf(PSK, "Key Pad for IKEv2"), signed octets), both sides
  * CHILD_SA KEYMAT = prf+(SK_d(1), Ni | Nr)

Exit status 0 when everything matches.
"""
import hashlib
import hmac
import json
import os
import sys

# --------------------------------------------------------------- AES-GCM
_SBOX = [0] * 256


def _init_sbox():
    p = q = 1
    while True:
        p = p ^ ((p << 1) & 0xFF) ^ (0x1B if p & 0x80 else 0)
        q ^= q << 1
        q ^= q << 2
        q ^= q << 4
        q &= 0xFF
        if q & 0x80:
            q ^= 0x09
        x = q ^ (q << 1 | q >> 7) ^ (q << 2 | q >> 6) ^ (q << 3 | q >> 5) ^ (q << 4 | q >> 4)
        _SBOX[p] = (x ^ 0x63) & 0xFF
        if p == 1:
            break
    _SBOX[0] = 0x63


_init_sbox()


def _xtime(a):
    return ((a << 1) ^ 0x1B) & 0xFF if a & 0x80 else a << 1


def _expand_key(key):
    nk = len(key) // 4
    nr = nk + 6
    w = [list(key[4 * i:4 * i + 4]) for i in range(nk)]
    rcon = 1
    for i in range(nk, 4 * (nr + 1)):
        t = list(w[i - 1])
        if i % nk == 0:
            t = [_SBOX[b] for b in t[1:] + t[:1]]
            t[0] ^= rcon
            rcon = _xtime(rcon)
        elif nk > 6 and i % nk == 4:
            t = [_SBOX[b] for b in t]
        w.append([a ^ b for a, b in zip(w[i - nk], t)])
    return [sum(w[4 * r:4 * r + 4], []) for r in range(nr + 1)]


def _aes_encrypt_block(rk, block):
    s = [a ^ b for a, b in zip(block, rk[0])]
    for rnd in range(1, len(rk)):
        s = [_SBOX[b] for b in s]
        s = [s[(i + 4 * (i % 4)) % 16] for i in range(16)]  # ShiftRows
        if rnd != len(rk) - 1:
            m = []
            for c in range(4):
                a = s[4 * c:4 * c + 4]
                t = a[0] ^ a[1] ^ a[2] ^ a[3]
                m += [a[i] ^ t ^ _xtime(a[i] ^ a[(i + 1) % 4]) for i in range(4)]
            s = m
        s = [a ^ b for a, b in zip(s, rk[rnd])]
    return bytes(s)


def _gf_mult(x, y):
    r = 0xE1 << 120
    z = 0
    for i in range(127, -1, -1):
        if (y >> i) & 1:
            z ^= x
        x = (x >> 1) ^ r if x & 1 else x >> 1
    return z


def _ghash(h, aad, ct):
    def blocks(b):
        b = b + bytes(-len(b) % 16)
        return [int.from_bytes(b[i:i + 16], 'big') for i in range(0, len(b), 16)]
    y = 0
    for blk in blocks(aad) + blocks(ct) + [(len(aad) * 8) << 64 | len(ct) * 8]:
        y = _gf_mult(y ^ blk, h)
    return y.to_bytes(16, 'big')


def aes_gcm_decrypt(key, nonce12, aad, ct, tag):
    rk = _expand_key(key)
    h = int.from_bytes(_aes_encrypt_block(rk, bytes(16)), 'big')
    j0 = nonce12 + b'\x00\x00\x00\x01'
    out = bytearray()
    for i in range(0, len(ct), 16):
        ctr = nonce12 + (2 + i // 16).to_bytes(4, 'big')
        ks = _aes_encrypt_block(rk, ctr)
        out += bytes(a ^ b for a, b in zip(ct[i:i + 16], ks))
    s = _ghash(h, aad, ct)
    exp_tag = bytes(a ^ b for a, b in zip(_aes_encrypt_block(rk, j0), s))
    if not hmac.compare_digest(exp_tag, tag):
        raise ValueError('AES-GCM ICV mismatch')
    return bytes(out)


# ------------------------------------------------------------ IKEv2 bits
def prf(key, data):
    return hmac.new(key, data, hashlib.sha384).digest()


def prf_plus(key, seed, length):
    out, t, n = b'', b'', 1
    while len(out) < length:
        t = prf(key, t + seed + bytes([n]))
        out += t
        n += 1
    return out[:length]


SK_LENGTHS = [('sk_d', 48), ('sk_ai', 0), ('sk_ar', 0), ('sk_ei', 36),
              ('sk_er', 36), ('sk_pi', 48), ('sk_pr', 48)]


def split_keymat(keymat):
    out, off = {}, 0
    for name, n in SK_LENGTHS:
        out[name] = keymat[off:off + n]
        off += n
    return out


def payloads(buf, first):
    """[(type, body)] of a chain of generic payloads starting with type first."""
    out, off, nxt = [], 0, first
    while nxt:
        ln = int.from_bytes(buf[off + 2:off + 4], 'big')
        out.append((nxt, buf[off + 4:off + ln]))
        nxt = buf[off]
        off += ln
    assert off == len(buf), 'payload chain does not cover the buffer'
    return out


def one(pls, ptype):
    found = [body for t, body in pls if t == ptype]
    assert len(found) == 1, f'payload {ptype}: {len(found)} found'
    return found[0]


def decrypt_sk(msg, sk_e):
    """Decrypt the SK payload (AES-GCM-16, RFC 5282) that follows the IKE
    header directly. Returns (first inner payload type, inner payloads
    without padding / pad length)."""
    assert msg[16] == 46, 'first payload must be SK'
    assert int.from_bytes(msg[24:28], 'big') == len(msg)
    sk_len = int.from_bytes(msg[30:32], 'big')
    assert 28 + sk_len == len(msg)
    aad = msg[:32]
    iv = msg[32:40]
    ct, icv = msg[40:-16], msg[-16:]
    plain = aes_gcm_decrypt(sk_e[:32], sk_e[32:36] + iv, aad, ct, icv)
    pad_len = plain[-1]
    return msg[28], plain[:len(plain) - 1 - pad_len]


def int_auth_ap(msg, plain):
    """IntAuth_A | IntAuth_P as strongSwan builds it: IKE header + SK payload
    header with both Length fields recomputed for A|P (no IV, padding, pad
    length or ICV), followed by the inner payloads."""
    a = bytearray(msg[:32])
    a[24:28] = (32 + len(plain)).to_bytes(4, 'big')
    a[30:32] = (4 + len(plain)).to_bytes(2, 'big')
    return bytes(a) + plain


# ----------------------------------------------------------------- checks
def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)),
        'strongswan-6.1-hybrid-x25519-mlkem768-psk.json')
    v = json.load(open(path))
    x = bytes.fromhex
    failures = []

    def check(name, got, want):
        if got == want:
            print(f'ok    {name}')
        else:
            print(f'FAIL  {name}\n      got  {got.hex() if isinstance(got, bytes) else got}\n'
                  f'      want {want.hex() if isinstance(want, bytes) else want}')
            failures.append(name)

    assert list(v)[0] == 'source'
    assert v['prf'] == 'PRF_HMAC_SHA2_384' and v['encr'] == 'ENCR_AES_GCM_16' and v['encr_key_bits'] == 256
    ni, nr = x(v['nonce_i']), x(v['nonce_r'])
    spi_i, spi_r = x(v['spi_i']), x(v['spi_r'])
    psk = x(v['psk'])

    # IKE_SA_INIT
    init_i, init_r = x(v['ike_sa_init_i']), x(v['ike_sa_init_r'])
    check('IKE_SA_INIT request header SPIs', init_i[:16], spi_i + bytes(8))
    check('IKE_SA_INIT response header SPIs', init_r[:16], spi_i + spi_r)
    check('IKE_SA_INIT exchange types / MIDs', (init_i[18], init_r[18], init_i[20:24], init_r[20:24]),
          (34, 34, bytes(4), bytes(4)))
    pi, pr = payloads(init_i[28:], init_i[16]), payloads(init_r[28:], init_r[16])
    check('Ni from IKE_SA_INIT request', one(pi, 40), ni)
    check('Nr from IKE_SA_INIT response', one(pr, 40), nr)
    ke_i, ke_r = one(pi, 34), one(pr, 34)
    check('KEi (method 31) from request', ke_i, v['ke0']['method'].to_bytes(2, 'big') + bytes(2) + x(v['ke0']['ke_i']))
    check('KEr (method 31) from response', ke_r, v['ke0']['method'].to_bytes(2, 'big') + bytes(2) + x(v['ke0']['ke_r']))

    # round 0
    g_ir = x(v['ke0']['g_ir'])
    skeyseed0 = prf(ni + nr, g_ir)
    check('SKEYSEED0 = prf(Ni|Nr, g^ir)', skeyseed0, x(v['skeyseed0']))
    sk0 = split_keymat(prf_plus(skeyseed0, ni + nr + spi_i + spi_r, 252))
    for name, _ in SK_LENGTHS:
        check(f'sk0.{name}', sk0[name], x(v['sk0'][name]))

    # IKE_INTERMEDIATE (protected with sk0)
    int_i, int_r = x(v['ike_intermediate_i']), x(v['ike_intermediate_r'])
    check('IKE_INTERMEDIATE header SPIs/type/MID', (int_i[:16], int_i[18], int_i[20:24], int_r[:16], int_r[18], int_r[20:24]),
          (spi_i + spi_r, 43, (1).to_bytes(4, 'big'), spi_i + spi_r, 43, (1).to_bytes(4, 'big')))
    f_i, plain_int_i = decrypt_sk(int_i, sk0['sk_ei'])
    f_r, plain_int_r = decrypt_sk(int_r, sk0['sk_er'])
    check('IKE_INTERMEDIATE request decrypts with sk0.sk_ei', plain_int_i, x(v['ike_intermediate_i_plain']))
    check('IKE_INTERMEDIATE response decrypts with sk0.sk_er', plain_int_r, x(v['ike_intermediate_r_plain']))
    check('ML-KEM-768 encapsulation key (1184 bytes) in request KE',
          one(payloads(plain_int_i, f_i), 34), (36).to_bytes(2, 'big') + bytes(2) + x(v['ke1']['ke_i']))
    check('ML-KEM-768 ciphertext (1088 bytes) in response KE',
          one(payloads(plain_int_r, f_r), 34), (36).to_bytes(2, 'big') + bytes(2) + x(v['ke1']['ke_r']))
    check('len(ke1.ke_i), len(ke1.ke_r)', (len(x(v['ke1']['ke_i'])), len(x(v['ke1']['ke_r']))), (1184, 1088))
    ap_i, ap_r = int_auth_ap(int_i, plain_int_i), int_auth_ap(int_r, plain_int_r)
    check('IntAuth_A|P (request) rebuilt from raw message', ap_i, x(v['int_auth_ap_i']))
    check('IntAuth_A|P (response) rebuilt from raw message', ap_r, x(v['int_auth_ap_r']))
    int_auth_i = prf(sk0['sk_pi'], ap_i)   # IntAuth_i0 is empty
    int_auth_r = prf(sk0['sk_pr'], ap_r)
    check('IntAuth_i1 = prf(sk0.sk_pi, A|P)', int_auth_i, x(v['int_auth_i']))
    check('IntAuth_r1 = prf(sk0.sk_pr, A|P)', int_auth_r, x(v['int_auth_r']))
    mid = v['ike_auth_mid']
    int_auth = int_auth_i + int_auth_r + mid.to_bytes(4, 'big')
    check('IntAuth = IntAuth_i | IntAuth_r | IKE_AUTH MID', int_auth, x(v['int_auth']))

    # round 1 (RFC 9370 2.2.2)
    ss = x(v['ke1']['ss'])
    skeyseed1 = prf(sk0['sk_d'], ss + ni + nr)
    check('SKEYSEED1 = prf(sk0.sk_d, ss|Ni|Nr)', skeyseed1, x(v['skeyseed1']))
    sk1 = split_keymat(prf_plus(skeyseed1, ni + nr + spi_i + spi_r, 252))
    for name, _ in SK_LENGTHS:
        check(f'sk1.{name}', sk1[name], x(v['sk1'][name]))

    # IKE_AUTH (protected with sk1)
    auth_msg_i, auth_msg_r = x(v['ike_auth_i']), x(v['ike_auth_r'])
    check('IKE_AUTH header type/MIDs', (auth_msg_i[18], auth_msg_r[18], auth_msg_i[20:24], auth_msg_r[20:24]),
          (35, 35, mid.to_bytes(4, 'big'), mid.to_bytes(4, 'big')))
    f_i, plain_auth_i = decrypt_sk(auth_msg_i, sk1['sk_ei'])
    f_r, plain_auth_r = decrypt_sk(auth_msg_r, sk1['sk_er'])
    check('IKE_AUTH request decrypts with sk1.sk_ei', plain_auth_i, x(v['ike_auth_i_plain']))
    check('IKE_AUTH response decrypts with sk1.sk_er', plain_auth_r, x(v['ike_auth_r_plain']))
    pai, par = payloads(plain_auth_i, f_i), payloads(plain_auth_r, f_r)
    idi_p = v['id_i']['type'].to_bytes(1, 'big') + bytes(3) + x(v['id_i']['data'])
    idr_p = v['id_r']['type'].to_bytes(1, 'big') + bytes(3) + x(v['id_r']['data'])
    check("IDi payload body = IDi'", one(pai, 35), idi_p)
    check("IDr payload body (response) = IDr'", one(par, 36), idr_p)
    check("id_i_prime / id_r_prime", (x(v['id_i_prime']), x(v['id_r_prime'])), (idi_p, idr_p))
    maced_i = prf(sk1['sk_pi'], idi_p)
    maced_r = prf(sk1['sk_pr'], idr_p)
    check('MACedIDi = prf(sk1.sk_pi, IDi\')', maced_i, x(v['maced_id_i']))
    check('MACedIDr = prf(sk1.sk_pr, IDr\')', maced_r, x(v['maced_id_r']))
    so_i = init_i + nr + maced_i + int_auth
    so_r = init_r + ni + maced_r + int_auth
    check('signed_octets_i = IKE_SA_INIT req | Nr | MACedIDi | IntAuth', so_i, x(v['signed_octets_i']))
    check('signed_octets_r = IKE_SA_INIT resp | Ni | MACedIDr | IntAuth', so_r, x(v['signed_octets_r']))
    keypad = prf(psk, b'Key Pad for IKEv2')
    check('prf(PSK, "Key Pad for IKEv2")', keypad, x(v['psk_keypad']))
    auth_i, auth_r = prf(keypad, so_i), prf(keypad, so_r)
    check('AUTH_i', auth_i, x(v['auth_i']))
    check('AUTH_r', auth_r, x(v['auth_r']))
    check('AUTH payload in IKE_AUTH request (method 2)', one(pai, 39), b'\x02' + bytes(3) + auth_i)
    check('AUTH payload in IKE_AUTH response (method 2)', one(par, 39), b'\x02' + bytes(3) + auth_r)

    # first CHILD_SA
    def child_spi(pls):
        sa = one(pls, 33)
        assert sa[5] == 3, 'protocol ESP'
        return sa[8:8 + sa[6]]
    check('child_spi_i from IKE_AUTH request SA', child_spi(pai), x(v['child_spi_i']))
    check('child_spi_r from IKE_AUTH response SA', child_spi(par), x(v['child_spi_r']))
    check('child KEYMAT seed = Ni | Nr', ni + nr, x(v['child_keymat_seed']))
    keymat = prf_plus(sk1['sk_d'], ni + nr, 72)
    check('child_encr_i = KEYMAT[0:36]', keymat[:36], x(v['child_encr_i']))
    check('child_encr_r = KEYMAT[36:72]', keymat[36:], x(v['child_encr_r']))

    if failures:
        print(f'{len(failures)} check(s) FAILED: {", ".join(failures)}')
        return 1
    print('all checks passed')
    return 0


if __name__ == '__main__':
    sys.exit(main())
