#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! Certificate chain rules of `passport::verify` / `verify_chain` (ript-profile §8): only
//! CAs issue, path lengths and chain length are bounded, and a TNAuthList on an intermediate
//! bounds the numbers below it. Certificates are built with rcgen.

use p256::ecdsa::SigningKey;
use p256::pkcs8::DecodePrivateKey;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use ript_proto::PassportError;
use ript_proto::passport::{self, Claims, MAX_CHAIN, TnAuthList, TnEntry};

const NOW: u64 = 1_700_000_000;
const TN_AUTH_LIST_ARCS: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 26];

/// A certificate, the issuer made of it (its key can sign children) and its passport key.
struct Node {
    der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
    key: SigningKey,
}

fn ca(constraint: BasicConstraints) -> IsCa {
    IsCa::Ca(constraint)
}

const CA_USAGES: &[KeyUsagePurpose] = &[KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
const LEAF_USAGES: &[KeyUsagePurpose] = &[KeyUsagePurpose::DigitalSignature];

fn params(
    cn: &str,
    is_ca: IsCa,
    usages: &[KeyUsagePurpose],
    tn: Option<Vec<TnEntry>>,
) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = is_ca;
    p.key_usages = usages.to_vec();
    if let Some(entries) = tn {
        p.custom_extensions.push(CustomExtension::from_oid_content(
            TN_AUTH_LIST_ARCS,
            TnAuthList(entries).to_der(),
        ));
    }
    p
}

/// Issues `p` (signed by `by`, or self-signed without one).
fn node(p: CertificateParams, by: Option<&Node>) -> Node {
    let kp = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = match by {
        Some(parent) => p.signed_by(&kp, &parent.issuer).unwrap(),
        None => p.self_signed(&kp).unwrap(),
    };
    let key = SigningKey::from_pkcs8_der(&kp.serialize_der()).unwrap();
    Node {
        der: cert.der().to_vec(),
        issuer: Issuer::new(p, kp),
        key,
    }
}

fn root() -> Node {
    node(
        params(
            "Root CA",
            ca(BasicConstraints::Unconstrained),
            CA_USAGES,
            None,
        ),
        None,
    )
}

fn one(n: &str) -> Vec<TnEntry> {
    vec![TnEntry::One(n.into())]
}

fn leaf(cn: &str, tn: Vec<TnEntry>, by: &Node) -> Node {
    node(
        params(cn, IsCa::ExplicitNoCa, LEAF_USAGES, Some(tn)),
        Some(by),
    )
}

fn passport_from(signer: &Node, orig: &str) -> String {
    let claims = Claims::new(orig, "+14089529999", NOW, "u-1");
    passport::sign(&claims, "https://sti.example/cert.pem", &signer.key)
}

fn chain(nodes: &[&Node]) -> Vec<Vec<u8>> {
    nodes.iter().map(|n| n.der.clone()).collect()
}

#[test]
fn a_customer_leaf_cannot_sign_a_forged_child() {
    let root = root();
    let anchors = chain(&[&root]);
    // The customer's legitimate leaf (CA:FALSE) for +14085551000 works ...
    let customer = leaf("+14085551000", one("14085551000"), &root);
    let jws = passport_from(&customer, "+14085551000");
    for c in [chain(&[&customer]), chain(&[&customer, &root])] {
        let claims = passport::verify(&jws, &c, &anchors, NOW).unwrap();
        assert_eq!(claims.from_e164(), "+14085551000");
    }
    // ... but its key must not issue a certificate for any other number.
    let forged = leaf("+19005550000", one("19005550000"), &customer);
    let jws = passport_from(&forged, "+19005550000");
    for c in [
        chain(&[&forged, &customer]),
        chain(&[&forged, &customer, &root]),
    ] {
        assert_eq!(
            passport::verify(&jws, &c, &anchors, NOW),
            Err(PassportError::Untrusted)
        );
        assert_eq!(
            passport::verify_chain(&c, &anchors, NOW),
            Err(PassportError::Untrusted)
        );
    }
    // Same for a leaf without basicConstraints at all, and for a CA:TRUE certificate whose
    // keyUsage does not allow keyCertSign.
    for is_ca in [IsCa::NoCa, ca(BasicConstraints::Unconstrained)] {
        let p = params("+14085551000", is_ca, LEAF_USAGES, Some(one("14085551000")));
        let signer = node(p, Some(&root));
        let forged = leaf("+19005550000", one("19005550000"), &signer);
        assert_eq!(
            passport::verify_chain(&chain(&[&forged, &signer]), &anchors, NOW),
            Err(PassportError::Untrusted)
        );
    }
}

#[test]
fn an_intermediate_tn_auth_list_bounds_the_leaves_below_it() {
    let root = root();
    let anchors = chain(&[&root]);
    // "1408555*": 14085550000 .. 14085559999.
    let range = vec![TnEntry::Range {
        start: "14085550000".into(),
        count: 10_000,
    }];
    let inter = node(
        params(
            "Carrier CA",
            ca(BasicConstraints::Constrained(0)),
            CA_USAGES,
            Some(range),
        ),
        Some(&root),
    );
    let inside = leaf("+14085551234", one("14085551234"), &inter);
    let jws = passport_from(&inside, "+14085551234");
    for c in [chain(&[&inside, &inter]), chain(&[&inside, &inter, &root])] {
        let claims = passport::verify(&jws, &c, &anchors, NOW).unwrap();
        assert_eq!(claims.from_e164(), "+14085551234");
    }
    // A leaf for a number outside the intermediate's range is refused.
    let outside = leaf("+14089529999", one("14089529999"), &inter);
    let jws = passport_from(&outside, "+14089529999");
    assert_eq!(
        passport::verify(&jws, &chain(&[&outside, &inter]), &anchors, NOW),
        Err(PassportError::Untrusted)
    );
    // A range inside passes; one reaching past the end, or a mix with one outside, fails.
    let sub = |start: &str, count| {
        vec![TnEntry::Range {
            start: start.into(),
            count,
        }]
    };
    let cases = [
        (sub("14085559000", 1000), Ok(())),
        (sub("14085559000", 1001), Err(PassportError::Untrusted)),
        (
            vec![
                TnEntry::One("14085550001".into()),
                TnEntry::One("14085560000".into()),
            ],
            Err(PassportError::Untrusted),
        ),
        (
            vec![TnEntry::Spc("1234".into())],
            Err(PassportError::Untrusted),
        ),
    ];
    for (tn, want) in cases {
        let l = leaf("x", tn.clone(), &inter);
        assert_eq!(
            passport::verify_chain(&chain(&[&l, &inter]), &anchors, NOW),
            want,
            "{tn:?}"
        );
    }
    // A leaf without a TNAuthList under a constrained intermediate is refused too.
    let bare = node(
        params("bare", IsCa::ExplicitNoCa, LEAF_USAGES, None),
        Some(&inter),
    );
    assert_eq!(
        passport::verify_chain(&chain(&[&bare, &inter]), &anchors, NOW),
        Err(PassportError::Untrusted)
    );
    // The anchor's own TNAuthList (if any) does not constrain: a root is trusted as given.
    let listed_root = node(
        params(
            "Listed root",
            ca(BasicConstraints::Unconstrained),
            CA_USAGES,
            Some(one("1")),
        ),
        None,
    );
    let l = leaf("+14085551000", one("14085551000"), &listed_root);
    assert_eq!(
        passport::verify_chain(&chain(&[&l]), &chain(&[&listed_root]), NOW),
        Ok(())
    );
}

#[test]
fn path_length_constraints_are_respected() {
    let strict_root = node(
        params(
            "Strict root",
            ca(BasicConstraints::Constrained(0)),
            CA_USAGES,
            None,
        ),
        None,
    );
    let inter = node(
        params(
            "Intermediate",
            ca(BasicConstraints::Unconstrained),
            CA_USAGES,
            None,
        ),
        Some(&strict_root),
    );
    let l = leaf("+14085551000", one("14085551000"), &inter);
    let anchors = chain(&[&strict_root]);
    assert_eq!(
        passport::verify_chain(&chain(&[&l, &inter]), &anchors, NOW),
        Err(PassportError::Untrusted),
        "pathlen 0 root may not have an intermediate"
    );
    assert_eq!(
        passport::verify_chain(&chain(&[&l, &inter, &strict_root]), &anchors, NOW),
        Err(PassportError::Untrusted),
        "also when the chain includes the anchor"
    );
    let direct = leaf("+14085551000", one("14085551000"), &strict_root);
    assert_eq!(
        passport::verify_chain(&chain(&[&direct]), &anchors, NOW),
        Ok(())
    );

    let root = root();
    let anchors = chain(&[&root]);
    let level1 = node(
        params("L1", ca(BasicConstraints::Constrained(0)), CA_USAGES, None),
        Some(&root),
    );
    let level2 = node(
        params("L2", ca(BasicConstraints::Unconstrained), CA_USAGES, None),
        Some(&level1),
    );
    let l = leaf("+14085551000", one("14085551000"), &level2);
    assert_eq!(
        passport::verify_chain(&chain(&[&l, &level2, &level1]), &anchors, NOW),
        Err(PassportError::Untrusted)
    );
    let l = leaf("+14085551000", one("14085551000"), &level1);
    assert_eq!(
        passport::verify_chain(&chain(&[&l, &level1]), &anchors, NOW),
        Ok(())
    );
}

#[test]
fn chains_are_capped_and_issuer_names_must_match() {
    let root = root();
    let anchors = chain(&[&root]);
    let mut cas = vec![root];
    for i in 0..MAX_CHAIN {
        let p = params(
            &format!("CA {i}"),
            ca(BasicConstraints::Unconstrained),
            CA_USAGES,
            None,
        );
        let next = node(p, cas.last());
        cas.push(next);
    }
    // cas = [root, CA 0 .. CA 4]; a leaf under CA k has k + 1 intermediates above it.
    let l = leaf("+14085551000", one("14085551000"), &cas[MAX_CHAIN - 1]);
    let mut ok: Vec<&Node> = vec![&l];
    ok.extend(cas[1..MAX_CHAIN].iter().rev());
    assert_eq!(ok.len(), MAX_CHAIN);
    assert_eq!(passport::verify_chain(&chain(&ok), &anchors, NOW), Ok(()));
    let l = leaf("+14085551000", one("14085551000"), &cas[MAX_CHAIN]);
    let mut long: Vec<&Node> = vec![&l];
    long.extend(cas[1..].iter().rev());
    assert_eq!(long.len(), MAX_CHAIN + 1);
    assert_eq!(
        passport::verify_chain(&chain(&long), &anchors, NOW),
        Err(PassportError::Untrusted)
    );

    // A certificate signed by the intermediate's key under another issuer name.
    let inter = &cas[1];
    let kp = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let renamed = Issuer::new(
        params(
            "Not CA 0",
            ca(BasicConstraints::Unconstrained),
            CA_USAGES,
            None,
        ),
        KeyPair::from_pem(&inter.issuer.key().serialize_pem()).unwrap(),
    );
    let cert = params(
        "+14085551000",
        IsCa::ExplicitNoCa,
        LEAF_USAGES,
        Some(one("14085551000")),
    )
    .signed_by(&kp, &renamed)
    .unwrap();
    assert_eq!(
        passport::verify_chain(&[cert.der().to_vec(), inter.der.clone()], &anchors, NOW),
        Err(PassportError::Untrusted)
    );
}

#[test]
fn an_anchor_must_be_a_ca_to_issue() {
    let not_ca = node(
        params("Not a CA", IsCa::ExplicitNoCa, LEAF_USAGES, None),
        None,
    );
    let l = leaf("+14085551000", one("14085551000"), &not_ca);
    assert_eq!(
        passport::verify_chain(&chain(&[&l]), &chain(&[&not_ca]), NOW),
        Err(PassportError::Untrusted)
    );
    // A configured anchor used directly as the signing certificate is trusted as given.
    let pinned = node(
        params(
            "+14085551000",
            IsCa::NoCa,
            LEAF_USAGES,
            Some(one("14085551000")),
        ),
        None,
    );
    let jws = passport_from(&pinned, "+14085551000");
    let c = chain(&[&pinned]);
    assert!(passport::verify(&jws, &c, &c, NOW).is_ok());
    // A leaf whose keyUsage does not allow digitalSignature signs no passport.
    let root = root();
    let no_sign = node(
        params(
            "+14085551000",
            IsCa::ExplicitNoCa,
            &[KeyUsagePurpose::KeyEncipherment],
            Some(one("14085551000")),
        ),
        Some(&root),
    );
    let jws = passport_from(&no_sign, "+14085551000");
    assert_eq!(
        passport::verify(&jws, &chain(&[&no_sign]), &chain(&[&root]), NOW),
        Err(PassportError::Untrusted)
    );
}
