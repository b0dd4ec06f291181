//! Open enums for the IANA registries IKEv2 uses ("Internet Key Exchange Version 2 (IKEv2)
//! Parameters"). Every registry value converts to and from its integer, and values without a
//! name here survive as `Unknown(n)`, so messages round-trip byte for byte.

use core::fmt;

/// Defines an open wire enum: named variants with their IANA spelling plus `Unknown(n)`.
///
/// Always build values with `From<int>`: `Unknown(n)` must only hold values that have no name,
/// or equality between the two spellings of one value breaks.
macro_rules! open_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $ty:ty {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $iana:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[non_exhaustive]
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $(
                $(#[$vmeta])*
                #[doc = concat!("`", $iana, "` = ", stringify!($value), ".")]
                $variant,
            )*
            /// A value without a name in this registry, kept so that it round-trips.
            Unknown($ty),
        }

        impl $name {
            /// The registry value, as on the wire.
            pub const fn value(self) -> $ty {
                match self {
                    $( Self::$variant => $value, )*
                    Self::Unknown(v) => v,
                }
            }

            /// The IANA name (RFC spelling), or `None` for an unknown value.
            pub const fn iana_name(self) -> Option<&'static str> {
                match self {
                    $( Self::$variant => Some($iana), )*
                    Self::Unknown(_) => None,
                }
            }
        }

        impl From<$ty> for $name {
            fn from(v: $ty) -> Self {
                match v {
                    $( $value => Self::$variant, )*
                    other => Self::Unknown(other),
                }
            }
        }

        impl From<$name> for $ty {
            fn from(v: $name) -> Self {
                v.value()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.iana_name() {
                    Some(name) => f.write_str(name),
                    None => write!(f, "{}({})", stringify!($name), self.value()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    };
}

open_enum! {
    /// IKEv2 Exchange Types (RFC 7296 §3.1, RFC 9242, RFC 9370).
    pub enum ExchangeType: u8 {
        IkeSaInit = 34 => "IKE_SA_INIT",
        IkeAuth = 35 => "IKE_AUTH",
        CreateChildSa = 36 => "CREATE_CHILD_SA",
        Informational = 37 => "INFORMATIONAL",
        IkeSessionResume = 38 => "IKE_SESSION_RESUME",
        IkeIntermediate = 43 => "IKE_INTERMEDIATE",
        IkeFollowupKe = 44 => "IKE_FOLLOWUP_KE",
    }
}

open_enum! {
    /// IKEv2 Payload Types (RFC 7296 §3.2, RFC 7383).
    pub enum PayloadType: u8 {
        NoNextPayload = 0 => "NO_NEXT_PAYLOAD",
        SecurityAssociation = 33 => "SA",
        KeyExchange = 34 => "KE",
        IdentificationInitiator = 35 => "IDi",
        IdentificationResponder = 36 => "IDr",
        Certificate = 37 => "CERT",
        CertificateRequest = 38 => "CERTREQ",
        Authentication = 39 => "AUTH",
        Nonce = 40 => "Ni/Nr",
        Notify = 41 => "N",
        Delete = 42 => "D",
        VendorId = 43 => "V",
        TrafficSelectorInitiator = 44 => "TSi",
        TrafficSelectorResponder = 45 => "TSr",
        Encrypted = 46 => "SK",
        Configuration = 47 => "CP",
        ExtensibleAuthentication = 48 => "EAP",
        EncryptedFragment = 53 => "SKF",
    }
}

open_enum! {
    /// Security Protocol Identifiers (RFC 7296 §3.3.1).
    pub enum ProtocolId: u8 {
        Ike = 1 => "IKE",
        Ah = 2 => "AH",
        Esp = 3 => "ESP",
    }
}

open_enum! {
    /// Transform Types (RFC 7296 §3.3.2; Type 4 renamed and Types 6..12 added by RFC 9370).
    pub enum TransformType: u8 {
        Encryption = 1 => "ENCR",
        PseudoRandomFunction = 2 => "PRF",
        Integrity = 3 => "INTEG",
        KeyExchange = 4 => "KE",
        ExtendedSequenceNumbers = 5 => "ESN",
        AdditionalKeyExchange1 = 6 => "ADDKE1",
        AdditionalKeyExchange2 = 7 => "ADDKE2",
        AdditionalKeyExchange3 = 8 => "ADDKE3",
        AdditionalKeyExchange4 = 9 => "ADDKE4",
        AdditionalKeyExchange5 = 10 => "ADDKE5",
        AdditionalKeyExchange6 = 11 => "ADDKE6",
        AdditionalKeyExchange7 = 12 => "ADDKE7",
    }
}

impl TransformType {
    /// The Transform Type of additional key exchange round `n` (1..=7), RFC 9370 §2.2.1.
    pub fn additional_key_exchange(n: u8) -> Option<Self> {
        (1..=7).contains(&n).then(|| Self::from(5 + n))
    }

    /// The RFC 9370 round (1..=7) if this is an ADDKE transform type.
    pub fn additional_key_exchange_round(self) -> Option<u8> {
        let v = self.value();
        (6..=12).contains(&v).then(|| v - 5)
    }
}

open_enum! {
    /// Transform Type 1 IDs, encryption algorithms (RFC 7296 §3.3.2, RFC 5282, RFC 7634).
    pub enum EncryptionAlgorithm: u16 {
        TripleDes = 3 => "ENCR_3DES",
        Null = 11 => "ENCR_NULL",
        AesCbc = 12 => "ENCR_AES_CBC",
        AesCtr = 13 => "ENCR_AES_CTR",
        AesCcm8 = 14 => "ENCR_AES_CCM_8",
        AesCcm12 = 15 => "ENCR_AES_CCM_12",
        AesCcm16 = 16 => "ENCR_AES_CCM_16",
        AesGcm8 = 18 => "ENCR_AES_GCM_8",
        AesGcm12 = 19 => "ENCR_AES_GCM_12",
        AesGcm16 = 20 => "ENCR_AES_GCM_16",
        NullAuthAesGmac = 21 => "ENCR_NULL_AUTH_AES_GMAC",
        ChaCha20Poly1305 = 28 => "ENCR_CHACHA20_POLY1305",
    }
}

open_enum! {
    /// Transform Type 2 IDs, pseudorandom functions (RFC 7296 §3.3.2, RFC 4868).
    pub enum PrfAlgorithm: u16 {
        HmacMd5 = 1 => "PRF_HMAC_MD5",
        HmacSha1 = 2 => "PRF_HMAC_SHA1",
        Aes128Xcbc = 4 => "PRF_AES128_XCBC",
        HmacSha2_256 = 5 => "PRF_HMAC_SHA2_256",
        HmacSha2_384 = 6 => "PRF_HMAC_SHA2_384",
        HmacSha2_512 = 7 => "PRF_HMAC_SHA2_512",
        Aes128Cmac = 8 => "PRF_AES128_CMAC",
    }
}

open_enum! {
    /// Transform Type 3 IDs, integrity algorithms (RFC 7296 §3.3.2, RFC 4868).
    pub enum IntegrityAlgorithm: u16 {
        None = 0 => "NONE",
        HmacMd5_96 = 1 => "AUTH_HMAC_MD5_96",
        HmacSha1_96 = 2 => "AUTH_HMAC_SHA1_96",
        AesXcbc96 = 5 => "AUTH_AES_XCBC_96",
        HmacSha2_256_128 = 12 => "AUTH_HMAC_SHA2_256_128",
        HmacSha2_384_192 = 13 => "AUTH_HMAC_SHA2_384_192",
        HmacSha2_512_256 = 14 => "AUTH_HMAC_SHA2_512_256",
    }
}

open_enum! {
    /// Transform Type 4 and 6..12 IDs, key exchange methods (RFC 7296, RFC 8031, RFC 9370,
    /// draft-ietf-ipsecme-ikev2-mlkem §4).
    pub enum KeyExchangeMethod: u16 {
        None = 0 => "NONE",
        Modp768 = 1 => "MODP_768",
        Modp1024 = 2 => "MODP_1024",
        Modp1536 = 5 => "MODP_1536",
        Modp2048 = 14 => "MODP_2048",
        Modp3072 = 15 => "MODP_3072",
        Modp4096 = 16 => "MODP_4096",
        Ecp256 = 19 => "ECP_256",
        Ecp384 = 20 => "ECP_384",
        Ecp521 = 21 => "ECP_521",
        Curve25519 = 31 => "CURVE_25519",
        Curve448 = 32 => "CURVE_448",
        MlKem512 = 35 => "ML_KEM_512",
        MlKem768 = 36 => "ML_KEM_768",
        MlKem1024 = 37 => "ML_KEM_1024",
    }
}

impl KeyExchangeMethod {
    /// Whether this method is a KEM resisting quantum attack (ML-KEM, FIPS 203).
    pub fn is_post_quantum(self) -> bool {
        matches!(self, Self::MlKem512 | Self::MlKem768 | Self::MlKem1024)
    }

    /// Human name for status output, e.g. `X25519`, `ML-KEM-768`.
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Ecp256 => "P-256",
            Self::Ecp384 => "P-384",
            Self::Ecp521 => "P-521",
            Self::Curve25519 => "X25519",
            Self::Curve448 => "X448",
            Self::MlKem512 => "ML-KEM-512",
            Self::MlKem768 => "ML-KEM-768",
            Self::MlKem1024 => "ML-KEM-1024",
            other => other.iana_name().unwrap_or("unknown"),
        }
    }
}

open_enum! {
    /// Transform Type 5 IDs, Extended Sequence Numbers (RFC 7296 §3.3.2).
    pub enum EsnMode: u16 {
        NoEsn = 0 => "No ESN",
        Esn = 1 => "ESN",
    }
}

open_enum! {
    /// Transform Attribute Types (RFC 7296 §3.3.5).
    pub enum TransformAttributeType: u16 {
        KeyLength = 14 => "Key Length",
    }
}

open_enum! {
    /// Identification Types for IDi/IDr (RFC 7296 §3.5).
    pub enum IdType: u8 {
        Ipv4Addr = 1 => "ID_IPV4_ADDR",
        Fqdn = 2 => "ID_FQDN",
        Rfc822Addr = 3 => "ID_RFC822_ADDR",
        Ipv6Addr = 5 => "ID_IPV6_ADDR",
        DerAsn1Dn = 9 => "ID_DER_ASN1_DN",
        DerAsn1Gn = 10 => "ID_DER_ASN1_GN",
        KeyId = 11 => "ID_KEY_ID",
        FcName = 12 => "ID_FC_NAME",
        Null = 13 => "ID_NULL",
    }
}

open_enum! {
    /// Authentication Methods (RFC 7296 §3.8, RFC 4754, RFC 7427, RFC 7619).
    pub enum AuthMethod: u8 {
        RsaDigitalSignature = 1 => "RSA Digital Signature",
        SharedKeyMessageIntegrityCode = 2 => "Shared Key Message Integrity Code",
        DssDigitalSignature = 3 => "DSS Digital Signature",
        EcdsaSha256P256 = 9 => "ECDSA with SHA-256 on the P-256 curve",
        EcdsaSha384P384 = 10 => "ECDSA with SHA-384 on the P-384 curve",
        EcdsaSha512P521 = 11 => "ECDSA with SHA-512 on the P-521 curve",
        GenericSecurePassword = 12 => "Generic Secure Password Authentication Method",
        NullAuthentication = 13 => "NULL Authentication",
        DigitalSignature = 14 => "Digital Signature",
    }
}

open_enum! {
    /// Certificate Encodings for CERT and CERTREQ (RFC 7296 §3.6, RFC 7670).
    pub enum CertificateEncoding: u8 {
        Pkcs7WrappedX509 = 1 => "PKCS #7 wrapped X.509 certificate",
        Pgp = 2 => "PGP Certificate",
        DnsSignedKey = 3 => "DNS Signed Key",
        X509Signature = 4 => "X.509 Certificate - Signature",
        Kerberos = 6 => "Kerberos Token",
        Crl = 7 => "Certificate Revocation List (CRL)",
        Arl = 8 => "Authority Revocation List (ARL)",
        Spki = 9 => "SPKI Certificate",
        X509Attribute = 10 => "X.509 Certificate - Attribute",
        RawRsaKey = 11 => "Raw RSA Key",
        HashUrlX509 = 12 => "Hash and URL of X.509 certificate",
        HashUrlX509Bundle = 13 => "Hash and URL of X.509 bundle",
        OcspContent = 14 => "OCSP Content",
        RawPublicKey = 15 => "Raw Public Key",
    }
}

open_enum! {
    /// Notify Message Types (RFC 7296 §3.10.1 and later RFCs). Values below 16384 are errors.
    pub enum NotifyType: u16 {
        UnsupportedCriticalPayload = 1 => "UNSUPPORTED_CRITICAL_PAYLOAD",
        InvalidIkeSpi = 4 => "INVALID_IKE_SPI",
        InvalidMajorVersion = 5 => "INVALID_MAJOR_VERSION",
        InvalidSyntax = 7 => "INVALID_SYNTAX",
        InvalidMessageId = 9 => "INVALID_MESSAGE_ID",
        InvalidSpi = 11 => "INVALID_SPI",
        NoProposalChosen = 14 => "NO_PROPOSAL_CHOSEN",
        InvalidKePayload = 17 => "INVALID_KE_PAYLOAD",
        AuthenticationFailed = 24 => "AUTHENTICATION_FAILED",
        SinglePairRequired = 34 => "SINGLE_PAIR_REQUIRED",
        NoAdditionalSas = 35 => "NO_ADDITIONAL_SAS",
        InternalAddressFailure = 36 => "INTERNAL_ADDRESS_FAILURE",
        FailedCpRequired = 37 => "FAILED_CP_REQUIRED",
        TsUnacceptable = 38 => "TS_UNACCEPTABLE",
        InvalidSelectors = 39 => "INVALID_SELECTORS",
        UnacceptableAddresses = 40 => "UNACCEPTABLE_ADDRESSES",
        UnexpectedNatDetected = 41 => "UNEXPECTED_NAT_DETECTED",
        UseAssignedHoA = 42 => "USE_ASSIGNED_HoA",
        TemporaryFailure = 43 => "TEMPORARY_FAILURE",
        ChildSaNotFound = 44 => "CHILD_SA_NOT_FOUND",
        InvalidGroupId = 45 => "INVALID_GROUP_ID",
        AuthorizationFailed = 46 => "AUTHORIZATION_FAILED",
        StateNotFound = 47 => "STATE_NOT_FOUND",
        InitialContact = 16384 => "INITIAL_CONTACT",
        SetWindowSize = 16385 => "SET_WINDOW_SIZE",
        AdditionalTsPossible = 16386 => "ADDITIONAL_TS_POSSIBLE",
        IpcompSupported = 16387 => "IPCOMP_SUPPORTED",
        NatDetectionSourceIp = 16388 => "NAT_DETECTION_SOURCE_IP",
        NatDetectionDestinationIp = 16389 => "NAT_DETECTION_DESTINATION_IP",
        Cookie = 16390 => "COOKIE",
        UseTransportMode = 16391 => "USE_TRANSPORT_MODE",
        HttpCertLookupSupported = 16392 => "HTTP_CERT_LOOKUP_SUPPORTED",
        RekeySa = 16393 => "REKEY_SA",
        EspTfcPaddingNotSupported = 16394 => "ESP_TFC_PADDING_NOT_SUPPORTED",
        NonFirstFragmentsAlso = 16395 => "NON_FIRST_FRAGMENTS_ALSO",
        MobikeSupported = 16396 => "MOBIKE_SUPPORTED",
        AdditionalIp4Address = 16397 => "ADDITIONAL_IP4_ADDRESS",
        AdditionalIp6Address = 16398 => "ADDITIONAL_IP6_ADDRESS",
        NoAdditionalAddresses = 16399 => "NO_ADDITIONAL_ADDRESSES",
        UpdateSaAddresses = 16400 => "UPDATE_SA_ADDRESSES",
        Cookie2 = 16401 => "COOKIE2",
        NoNatsAllowed = 16402 => "NO_NATS_ALLOWED",
        AuthLifetime = 16403 => "AUTH_LIFETIME",
        MultipleAuthSupported = 16404 => "MULTIPLE_AUTH_SUPPORTED",
        AnotherAuthFollows = 16405 => "ANOTHER_AUTH_FOLLOWS",
        RedirectSupported = 16406 => "REDIRECT_SUPPORTED",
        Redirect = 16407 => "REDIRECT",
        RedirectedFrom = 16408 => "REDIRECTED_FROM",
        EapOnlyAuthentication = 16417 => "EAP_ONLY_AUTHENTICATION",
        ChildlessIkev2Supported = 16418 => "CHILDLESS_IKEV2_SUPPORTED",
        QuickCrashDetection = 16419 => "QUICK_CRASH_DETECTION",
        Ikev2FragmentationSupported = 16430 => "IKEV2_FRAGMENTATION_SUPPORTED",
        SignatureHashAlgorithms = 16431 => "SIGNATURE_HASH_ALGORITHMS",
        CloneIkeSaSupported = 16432 => "CLONE_IKE_SA_SUPPORTED",
        CloneIkeSa = 16433 => "CLONE_IKE_SA",
        Puzzle = 16434 => "PUZZLE",
        UsePpk = 16435 => "USE_PPK",
        PpkIdentity = 16436 => "PPK_IDENTITY",
        NoPpkAuth = 16437 => "NO_PPK_AUTH",
        IntermediateExchangeSupported = 16438 => "INTERMEDIATE_EXCHANGE_SUPPORTED",
        Ip4Allowed = 16439 => "IP4_ALLOWED",
        Ip6Allowed = 16440 => "IP6_ALLOWED",
        AdditionalKeyExchange = 16441 => "ADDITIONAL_KEY_EXCHANGE",
        UseAggfrag = 16442 => "USE_AGGFRAG",
    }
}

impl NotifyType {
    /// Error types are 0..16383; status types 16384 and up (RFC 7296 §3.10.1).
    pub fn is_error(self) -> bool {
        self.value() < 16384
    }
}

open_enum! {
    /// Traffic Selector Types (RFC 7296 §3.13.1).
    pub enum TsType: u8 {
        Ipv4AddrRange = 7 => "TS_IPV4_ADDR_RANGE",
        Ipv6AddrRange = 8 => "TS_IPV6_ADDR_RANGE",
        FcAddrRange = 9 => "TS_FC_ADDR_RANGE",
    }
}

open_enum! {
    /// Configuration Payload CFG Types (RFC 7296 §3.15).
    pub enum CfgType: u8 {
        Request = 1 => "CFG_REQUEST",
        Reply = 2 => "CFG_REPLY",
        Set = 3 => "CFG_SET",
        Ack = 4 => "CFG_ACK",
    }
}

open_enum! {
    /// Configuration Payload Attribute Types (RFC 7296 §3.15.1 and later RFCs).
    pub enum ConfigAttributeType: u16 {
        InternalIp4Address = 1 => "INTERNAL_IP4_ADDRESS",
        InternalIp4Netmask = 2 => "INTERNAL_IP4_NETMASK",
        InternalIp4Dns = 3 => "INTERNAL_IP4_DNS",
        InternalIp4Nbns = 4 => "INTERNAL_IP4_NBNS",
        InternalIp4Dhcp = 6 => "INTERNAL_IP4_DHCP",
        ApplicationVersion = 7 => "APPLICATION_VERSION",
        InternalIp6Address = 8 => "INTERNAL_IP6_ADDRESS",
        InternalIp6Dns = 10 => "INTERNAL_IP6_DNS",
        InternalIp6Dhcp = 12 => "INTERNAL_IP6_DHCP",
        InternalIp4Subnet = 13 => "INTERNAL_IP4_SUBNET",
        SupportedAttributes = 14 => "SUPPORTED_ATTRIBUTES",
        InternalIp6Subnet = 15 => "INTERNAL_IP6_SUBNET",
        InternalDnsDomain = 25 => "INTERNAL_DNS_DOMAIN",
    }
}

open_enum! {
    /// Hash algorithms for SIGNATURE_HASH_ALGORITHMS (RFC 7427 §7, RFC 8420).
    pub enum HashAlgorithm: u16 {
        Sha1 = 1 => "SHA1",
        Sha2_256 = 2 => "SHA2_256",
        Sha2_384 = 3 => "SHA2_384",
        Sha2_512 = 4 => "SHA2_512",
        Identity = 5 => "Identity",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_round_trips() {
        for v in 0..=u8::MAX {
            assert_eq!(ExchangeType::from(v).value(), v);
            assert_eq!(PayloadType::from(v).value(), v);
            assert_eq!(TransformType::from(v).value(), v);
        }
        for v in 0..=u16::MAX {
            assert_eq!(NotifyType::from(v).value(), v);
            assert_eq!(KeyExchangeMethod::from(v).value(), v);
        }
    }

    #[test]
    fn code_points_match_the_registries() {
        assert_eq!(ExchangeType::IkeIntermediate.value(), 43);
        assert_eq!(ExchangeType::IkeFollowupKe.value(), 44);
        assert_eq!(PayloadType::EncryptedFragment.value(), 53);
        assert_eq!(KeyExchangeMethod::Curve25519.value(), 31);
        assert_eq!(KeyExchangeMethod::Ecp384.value(), 20);
        assert_eq!(KeyExchangeMethod::MlKem768.value(), 36);
        assert_eq!(NotifyType::IntermediateExchangeSupported.value(), 16438);
        assert_eq!(NotifyType::AdditionalKeyExchange.value(), 16441);
        assert_eq!(NotifyType::StateNotFound.value(), 47);
        assert_eq!(
            TransformType::additional_key_exchange(1),
            Some(TransformType::AdditionalKeyExchange1)
        );
        assert_eq!(
            TransformType::from(12).additional_key_exchange_round(),
            Some(7)
        );
        assert_eq!(TransformType::additional_key_exchange(8), None);
        assert_eq!(
            TransformType::KeyExchange.additional_key_exchange_round(),
            None
        );
    }

    #[test]
    fn debug_prints_rfc_spelling_or_value() {
        assert_eq!(format!("{:?}", ExchangeType::IkeSaInit), "IKE_SA_INIT");
        assert_eq!(
            format!("{:?}", NotifyType::from(40000)),
            "NotifyType(40000)"
        );
        assert!(NotifyType::NoProposalChosen.is_error());
        assert!(!NotifyType::Cookie.is_error());
    }
}
